"""Chat TUI widgets: the message list, the prompt input and the live stats panel."""
