"""Plans: the data that says what will change, and how it travels as JSON."""
