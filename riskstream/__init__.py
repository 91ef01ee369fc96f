"""riskstream: streaming fraud and abnormal-click detection."""
