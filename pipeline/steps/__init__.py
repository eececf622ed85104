"""Preprocessing chains: named, typed, documented value operations before and after SR.

* :mod:`~pipeline.steps.base` -- the :class:`Step` contract (forward, exact inverse,
  radius, fitting on a bounded sample);
* :mod:`~pipeline.steps.builtin`, :mod:`~pipeline.steps.dicom` -- the built-in steps;
* :mod:`~pipeline.steps.registry` -- names to steps: built-ins, ``zssr.steps`` entry
  points, and user functions by dotted path when :mod:`~pipeline.steps.policy` allows;
* :mod:`~pipeline.steps.chain` -- :class:`ChainReader` / :class:`ChainWriter`: a
  reader and a writer wrapped so pre/post steps and their inverses apply tile by tile
  without the engine knowing.

Arrows inside run one way: base <- dicom <- builtin <- registry <- chain.
"""

from .base import Sample, Step, UserStep, check, param
from .chain import BoundChain, ChainReader, ChainSpec, ChainWriter, bind_chain
from .policy import ALLOW_USER_STEPS_ENV, allow_user_steps, user_steps_allowed
from .registry import (
                       ENTRY_POINT_GROUP,
                       available_steps,
                       build_params,
                       describe_steps,
                       step_class,
                       step_from_config,
)

__all__ = ["Sample", "Step", "UserStep", "check", "param", "BoundChain", "ChainReader",
           "ChainSpec", "ChainWriter", "bind_chain", "ALLOW_USER_STEPS_ENV",
           "allow_user_steps", "user_steps_allowed", "ENTRY_POINT_GROUP", "available_steps",
           "build_params", "describe_steps", "step_class", "step_from_config"]
