"""From the trained models to OpenVINO IR: the IR pair, IR-in-the-loop evaluation, layer-by-layer comparison."""
