"""The chat's rules, shared by the pages and the socket: rooms, text, rate limits."""
