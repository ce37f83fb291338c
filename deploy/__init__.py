"""The deploy pipeline as plain Python. Nothing here imports Django."""
