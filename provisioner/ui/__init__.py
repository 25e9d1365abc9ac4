"""What people see: plans, progress, summaries."""
