# Sourced by the Makefile and .ci/run: jemalloc for XLA on CPU, for processes that do
# not go through a launcher (pytest, notebooks started by hand). The launchers arrange
# it themselves (launch/allocator.py, which also holds the settings and why).
_research_py="${PYTHON:-python3}"
if command -v "$_research_py" >/dev/null 2>&1; then
  eval "$("$_research_py" "$(dirname "${BASH_SOURCE[0]:-$0}")/allocator.py" --shell)"
fi
unset _research_py
