"""An OpenAI-compatible server for course checkpoints: engine, dynamic batcher, response cache, HTTP API.

`dstutor serve --model PATH` starts it; `dstutor.serve.process.ServerProcess` starts it from a notebook.
"""
