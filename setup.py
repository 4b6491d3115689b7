from pathlib import Path

from setuptools import find_packages, setup

about = {}
exec((Path(__file__).parent / "spacy_vanilla_ner" / "about.py").read_text(), about)

setup(
    name="spacy-vanilla-ner",
    version=about["__version__"],
    description="A from-scratch Transformer encoder and a BILUO tagging NER component for spaCy v3",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["spacy_vanilla_ner", "spacy_vanilla_ner.*"]),
    python_requires=">=3.9",
    install_requires=[
        "spacy>=3.8,<3.9",
        "thinc>=8.3,<8.4",
        "torch>=2.0",
        "wasabi>=0.9.1,<1.2.0",
        "numpy>=1.19",
        "typer>=0.3",
    ],
    extras_require={
        # The pretrained-transformer baseline. spacy-transformers 1.4 breaks with
        # transformers>=4.53.3.
        "transformers": ["spacy-transformers>=1.4,<1.5", "transformers<4.53.3"],
        "plots": ["matplotlib>=3.5"],
    },
    entry_points={
        "spacy_architectures": [
            "spacy-vanilla-ner.TransformerEncoder.v1 = spacy_vanilla_ner.architectures:build_transformer_encoder_v1",
            "spacy-vanilla-ner.TransformerTok2Vec.v1 = spacy_vanilla_ner.architectures:build_transformer_tok2vec_v1",
            "spacy-vanilla-ner.NERTagger.v1 = spacy_vanilla_ner.architectures:build_ner_tagger_v1",
        ],
        "spacy_factories": [
            "vanilla_ner = spacy_vanilla_ner.pipeline:make_vanilla_ner",
        ],
    },
    classifiers=[
        "Framework :: spaCy",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
