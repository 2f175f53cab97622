"""The comparison matrix (the output): statistics over what the store aggregated.

Not to be confused with a BatchTest's variant matrix (the input, `wtb.variant_matrix`).
"""
