"""The live event flow: the outbox and publisher, WebSocket consumers, and delivery by web push and e-mail."""
