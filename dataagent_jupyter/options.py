"""How one question is to be answered: the options every front end passes to the session.

``%%ask --run --into out``, the chat widget's mode toggle and the panel's ask request all
become one :class:`AskOptions`. The record checks itself when it is made, so a bad
combination is refused the same way whichever front end built it, and no front end
repeats a check of its own. Fields left ``None`` mean "the ``%config DataAgent`` value";
:meth:`AskOptions.resolve` fills them in (and checks the combinations that depend on
them, such as ``--into`` when the configured mode is ``run``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .engines.run import MAX_SAMPLE
from .errors import UsageError
from .events import MODES, Mode
from .frames import Privacy

if TYPE_CHECKING:
    from .config import DataAgent

__all__ = ["PRIVACIES", "AskOptions", "as_mode", "configured_mode"]

PRIVACIES: tuple[Privacy, ...] = ("sample", "schema")


@dataclass(frozen=True)
class AskOptions:
    """The options of one question; immutable and valid once made.

    ::

        AskOptions(frames=("sales",), mode="run", into="by_region")
    """

    #: frames the question is about; None: every frame, most recently defined first
    frames: tuple[str, ...] | None = None
    #: insert: propose the code as a cell; run: run it in the child kernel; agent: in steps
    mode: Mode | None = None
    #: the model to ask; None: ``DataAgent.model``
    model: str | None = None
    #: schema: send no cell values; sample: a few sampled rows
    privacy: Privacy | None = None
    #: False asks the endpoint even when an identical request is cached
    use_cache: bool = True
    #: insert mode: run the code in the child first and fix it if it fails
    check: bool = False
    #: run or agent mode: bind the child's (last step's) ``result`` under this name
    into: str | None = None
    #: the notebook cell asking (the ``cellId`` of the execute request): a re-run of the
    #: cell replaces its turn, and only the turns before it are the follow-up context
    cell_id: str | None = None
    #: run mode on a Dask or Spark frame: run on its first N rows, pulled by the engine
    sample: int | None = None

    def __post_init__(self) -> None:
        if self.frames is not None:
            if isinstance(self.frames, str) or not all(isinstance(f, str) for f in self.frames):
                raise UsageError("frames must be a list of names, or None for all frames.")
            # a list from a caller becomes a tuple: the record stays immutable and hashable
            object.__setattr__(self, "frames", tuple(self.frames) or None)
        if self.mode is not None:
            as_mode(self.mode)
        if self.privacy is not None and self.privacy not in PRIVACIES:
            raise UsageError("--privacy must be 'schema' or 'sample'.")
        if self.into is not None and not self.into.isidentifier():
            raise UsageError(f"--into needs a valid variable name, not {self.into!r}.")
        if self.check and self.mode in ("run", "agent"):
            raise UsageError(f"--check goes with --insert ({self.mode} mode always runs).")
        if self.sample is not None:
            if type(self.sample) is not int or not 0 < self.sample <= MAX_SAMPLE:
                raise UsageError(f"--sample takes a number of rows from 1 to {MAX_SAMPLE:,}.")
            if self.mode == "insert" and not self.check:
                raise UsageError(
                    "--sample goes with --run: insert mode runs nothing, so it needs no sample."
                )
        if self.into is not None and self.mode == "insert":
            raise UsageError(
                "--into brings back the result of a run; add --run.",
                hint="In insert mode the proposed cell leaves `result` in your namespace when "
                "you run it.",
            )

    def resolve(self, config: DataAgent) -> AskOptions:
        """These options with the ``%config DataAgent`` defaults filled in, checked again."""
        return replace(
            self,
            mode=self.mode or configured_mode(config),
            model=self.model or config.model,
            privacy=self.privacy or ("schema" if config.privacy == "schema" else "sample"),
        )


def as_mode(value: object) -> Mode:
    """``value`` (a string from a request, a setting) as a :data:`Mode`, or a usage error."""
    for mode in MODES:
        if value == mode:
            return mode
    raise UsageError(f"mode must be 'insert', 'run' or 'agent', not {value!r}.")


def configured_mode(config: DataAgent) -> Mode:
    """``DataAgent.mode`` as a :data:`Mode` (the trait admits only these values)."""
    return as_mode(config.mode)
