"""The tus 1.0 resumable-upload protocol (tus.io/protocols/resumable-upload), one concern per module."""
