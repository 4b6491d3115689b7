"""BILUO tagging in numpy: the tag rules (`biluo`), constrained Viterbi
decoding (`viterbi`) and a linear-chain CRF (`crf`)."""
