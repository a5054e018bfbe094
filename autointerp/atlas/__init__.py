"""The report stage: the static HTML atlas (pages), the numbers its charts draw (figures), the
audio clips it plays (audio), all read from the database through store.views.
Imports store, corpus.audio; never calls an LLM."""
