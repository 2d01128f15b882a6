"""The smallest launchyard run: read the run's config, greet, keep an output.

    launchyard launch -q hello -c examples/hello_world/config.yaml \
        -- python examples/hello_world/hello.py
"""

import json
import os
import tempfile

import launchyard

config = launchyard.run_config()
name = config.get("name", "world")
print(f"{os.environ.get('GREETING', 'hello')}, {name}! (run {launchyard.run_id()})")
print("GPUs:", repr(os.environ.get("CUDA_VISIBLE_DEVICES")))

with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
    json.dump({"greeted": name}, fh)
launchyard.save(fh.name, "greeting.json")
