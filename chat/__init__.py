"""Talk: rooms, messages, attachments, file-type policy and talk logs (built by the talk issue)."""
