"""Clinical NLP: notes from the lake, MedCAT concept extraction, ConText, evaluation."""
