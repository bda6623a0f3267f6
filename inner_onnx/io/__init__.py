"""Reading and writing what the user hands over: the model, data files, specs, outputs."""
