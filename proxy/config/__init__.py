"""The policy file and the small languages inside it: YAML checked line by line, durations and sizes."""
