"""Function-based views by area; every check goes through portal.access."""
