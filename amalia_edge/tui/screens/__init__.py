"""Chat TUI screens: chat, help, settings, history, model switch, why-this-backend."""
