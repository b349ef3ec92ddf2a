"""Training, calibration and evaluation of models on versioned datasets."""
