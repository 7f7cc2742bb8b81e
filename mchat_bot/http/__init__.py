"""The daemon's HTTP doors: Mattermost outgoing webhooks and slash commands in, incoming webhooks out."""
