"""Agent mode: a question worked on in several steps in the sandbox, proposed as cells.

- :mod:`.moves` - the model's next move, from a tool call or from plain text;
- :mod:`.steps` - what a step produced, checked for silent failures, told to the model;
- :mod:`.child_report` - the code that describes a step's results inside the child;
- :mod:`.prompts` - the rules of working in steps;
- :mod:`.loop` - the step loop, run inside the session's turn lifecycle.
"""
