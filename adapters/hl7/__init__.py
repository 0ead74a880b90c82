"""HL7 v2 over MLLP: the practice-software door (orders and patient updates in)."""
