"""The web layer shared by every page: the chat page, error pages and JSON errors."""
