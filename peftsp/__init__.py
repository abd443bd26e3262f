"""PEFT-SP: signal-peptide prediction with parameter-efficiently tuned ESM-2 and a CRF head."""

__version__ = "0.1.0"
