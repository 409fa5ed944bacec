"""The readable from-scratch Transformer (model.py, top to bottom), its parity with TransformerLens
and Hugging Face, the learner's component checks and the induction training loop."""
