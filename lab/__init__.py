"""Linear-transformer lab: in-context linear regression, where "a layer is one optimizer step" is exact."""
