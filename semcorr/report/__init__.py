"""What is shown of runs: printed summaries, tables, published numbers, paper tables, comparisons."""
