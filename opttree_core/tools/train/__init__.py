"""Training drafts for a target: self-distillation data, the EAGLE head and the draft LM recipes."""
