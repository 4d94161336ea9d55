"""Flight-delay prediction service for Santiago de Chile airport (SCL)."""
