"""evaluate.py's helpers: what it measures (metrics, fewshot), how it judges the paper's claims
(claims) and how it writes the results (report, figures). Nothing else imports them."""
