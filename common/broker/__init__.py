"""The PostgreSQL message broker: kombu's tables and the transport that uses them."""
