# Shell functions the benchmarks share; sourced. Uses $PY (a Python 3).

# docs COUNT LENGTH FILE: COUNT documents of LENGTH random letters (seeded),
# joined by <DOC>, for tuneforge-train --separator '<DOC>': every sequence
# has exactly LENGTH tokens under the byte tokenizer.
docs() {
  $PY -c "
import random, sys
random.seed(1)
n, t = int(sys.argv[1]), int(sys.argv[2])
docs = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz ') for _ in range(t)) for _ in range(n)]
open(sys.argv[3], 'w').write('<DOC>'.join(docs))" "$1" "$2" "$3"
}

# median: the median of the numbers on standard input (spaces or lines).
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
