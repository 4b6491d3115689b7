"""The encoder and tagger models: plain torch modules (`torch_encoder`), the
windowing glue to thinc (`windowing`), and the registered thinc builders
(`encoder`, `tagger`)."""
