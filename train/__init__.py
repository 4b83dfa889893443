"""Training over the qformer library: stage 1 (ITC + ITM + ITG) and stage 2 (LM loss) on accelerate."""
