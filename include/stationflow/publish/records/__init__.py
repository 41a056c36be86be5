"""Smart Emission record chain, publish: refined values to STA and SOS-T servers."""
