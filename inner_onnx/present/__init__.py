"""What a person reads: summaries and the HTML report."""
