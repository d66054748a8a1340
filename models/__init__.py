"""Framework-neutral model specs (TOML files) and the canonical weight layout."""
from models.spec import (ModelSpec, SpecError, init_weights, list_models, load_spec,  # noqa: F401
                         spec_from_dict, weights_digest)
