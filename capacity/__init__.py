"""`make capacity`: what a stack costs a month and how fast it scales out, from its own settings."""
