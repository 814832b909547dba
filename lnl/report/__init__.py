"""What a run tells a practitioner: a per-sample label report, corrected labels, a noise estimate and pictures."""
