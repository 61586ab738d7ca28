"""An LLM agent that adapts (or not) in context, scored instead of sampled (Riemer et al., arXiv 2412.19726).

The model is frozen; all it gets is the prompt: the rules, optionally the payoffs, and the history of the game.
Instead of generating free text and parsing it, the agent **scores** each legal action word: the log-probability

    log p(w | prompt) = Σ_i log p(w_i | prompt, w_<i)      (w tokenized with a leading space, w_i its tokens)

of every action word after an action query, and plays the argmax (``temperature=0``, deterministic) or samples
``softmax(log p / temperature)``. The same mechanism is the literal-ToM probe: the log-probabilities of each
partner action word after a prediction query, normalised over the legal words. Scoring can never name an
illegal action, so :attr:`LLMAgent.invalid` stays 0 for this backend.

The prompt grows by one line per round. :class:`ScoringLM` keeps the KV cache of the prompt so far: each round
encodes only the new line, and each query + option is run on top of the cache and then cropped away
(``DynamicCache.crop``). ``reuse_cache=False`` re-encodes the whole prompt for every option instead; both paths
see the same token ids (the prompt is the concatenation of its separately tokenized pieces), so their
log-probabilities agree to float round-off.

Prompt families (``prompt=``), after the paper's — all plain completion of a formatted history:

- ``"lm"``: lines "Round k: you played a, the partner played b."; the action query is "Round t: you played",
  the literal probe "Round t: you played a_t, the partner played".
- ``"social"``: predict, then act. Lines "Round k: the partner played b, you played a."; the probe is
  "Round t: the partner played", and the action query writes the model's own most likely prediction x in:
  "Round t: the partner played x, you played".
- ``"oracle"``: as social, but x is the partner's actual next move (its most likely one, if stochastic) — does the
  model exploit the answer when it is handed it?
- ``"no-history"``: the lm prompt without history lines; ``"no-payoffs"``: the lm prompt without the points.
- ``"chat"``: the instruct model's own chat format (the tokenizer's chat template, e.g. ChatML for SmolLM2): the
  rules are the system message; each round is a user question "[The partner played b. ]Round t: which action do
  you play? Reply with one word: <listed words>." and the assistant's one-word answer (the scored word, without
  a leading space). The literal probe asks "which action will the partner play?" in the same place (before our
  move is known to it). The template must render each conversation as a prefix of its extension (ChatML does),
  so the KV cache can be kept.

For larger models, :class:`HTTPAgent` asks any OpenAI-compatible chat endpoint (:class:`HTTPBackend`) the same
questions, asking for a last line "Answer: <action>", and reads the choice the reply commits to
(:func:`parse_action`); replies that commit to none, or are ambiguous, are counted (``invalid``,
``invalid_predictions``) and replaced by a uniformly random action / a uniform prediction. (Until this version
the questions said "Answer with one word" and the first legal word of the reply was taken; no committed result
of the book used the HTTP agent.)
"""

from __future__ import annotations

from typing import Sequence

import itertools
import json
import os
import re
import socket
import urllib.error
import urllib.request

import numpy as np
import torch

from ..lab import cache_kwargs
from ..lab.checks import check_choice, check_float, check_int, check_sequence, check_type, describe
from .agents import Agent
from .games import MatrixGame, get_game

__all__ = ["PROMPTS", "HTTPAgent", "HTTPBackend", "LLMAgent", "ScoringLM", "action_orders", "parse_action",
           "rules_text"]

PROMPTS = ("lm", "social", "oracle", "no-history", "no-payoffs", "chat")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def rules_text(game: MatrixGame, *, payoffs: bool = True, order=None) -> str:
    """The prompt's header: the rules, and (unless ``payoffs=False``) every cell of both payoff matrices.

    ``order`` lists our action words in another order (a permutation of our actions, as words or indices; default
    the game's own order). The partner's words follow the same order when they are the same words as ours (RPS,
    IPD, BoS), else their own. Only the listing changes; the game does not. Position in a list sways a small
    model's choice, so an evaluation should run over all orders (:func:`action_orders`)."""
    game = get_game(game)
    check_type("payoffs", payoffs, bool)
    ours = _order(game, order)
    theirs = _partner_order(game, ours)
    lines = [
        "You are playing a game repeatedly with a partner. In each round you both choose an action at the same time.",
        f"Your actions: {', '.join(game.actions[a] for a in ours)}. "
        f"The partner's actions: {', '.join(game.partner_actions[b] for b in theirs)}.",
    ]
    if payoffs:
        lines.append("Points:")
        for a in ours:
            for b in theirs:
                r, s = game.reward(a, b)
                lines.append(f"- you play {game.actions[a]} and the partner plays {game.partner_actions[b]}: you get "
                             f"{_fmt(r)}, the partner gets {_fmt(s)}.")
    lines.append("Your goal is to get as many points as possible in total.")
    return "\n".join(lines) + "\n\n"


def _check_order(order) -> tuple | None:
    """``order`` as a tuple of distinct words or int indices (None passes); the game checks it at use."""
    if order is None:
        return None
    items = check_sequence("order", order, "action words or indices (a permutation of our actions)")
    for k, x in enumerate(items):
        if isinstance(x, bool) or not isinstance(x, (str, int, np.integer)):
            raise TypeError(f"order[{k}] must be an action word or an int index, got {describe(x)}")
    keys = [x.lower() if isinstance(x, str) else int(x) for x in items]
    if len(set(keys)) != len(keys):
        raise ValueError(f"order must not repeat an action, got {list(items)}")
    return tuple(items)


def _order(game: MatrixGame, order) -> list[int]:
    """Our action indices in the listing ``order`` (a permutation of all of them)."""
    order = _check_order(order)
    if order is None:
        return list(range(game.n_actions))
    try:
        idx = [game.action_index(x) for x in order]
    except (TypeError, ValueError) as err:
        raise type(err)(f"order: {err}") from None
    if sorted(idx) != list(range(game.n_actions)):
        raise ValueError(f"order must list each of the {game.n_actions} actions {list(game.actions)} once, got "
                         f"{list(order)}")
    return idx


def _partner_order(game: MatrixGame, ours: list[int]) -> list[int]:
    """The partner's listing: the same words in the same order as ours when the two lists hold the same words."""
    low = [w.lower() for w in game.partner_actions]
    if sorted(low) != sorted(w.lower() for w in game.actions):
        return list(range(game.n_partner_actions))
    return [low.index(game.actions[a].lower()) for a in ours]


def action_orders(game: MatrixGame) -> list[tuple[str, ...]]:
    """Every listing order of our action words (``n!``: 6 for RPS, 2 for IPD and BoS), the game's own first."""
    game = get_game(game)
    return [tuple(game.actions[a] for a in p) for p in itertools.permutations(range(game.n_actions))]


def _crop_to(cache, length: int) -> None:
    """Cut ``cache`` back to its first ``length`` positions (a negative ``crop`` removes that many tokens, which
    every transformers version since 4.38 reads the same way; a positive one changed meaning in 5.x)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


class ScoringLM:
    """Log-probabilities of candidate words after a growing prompt, with the prompt's KV cache reused.

    Args:
        model, tokenizer: a Hugging Face causal LM and its tokenizer (e.g. :func:`companion.lab.load_model`).
        reuse_cache: keep the prompt's ``DynamicCache`` between calls (default) or re-encode everything per option.
    """

    def __init__(self, model, tokenizer, *, reuse_cache: bool = True) -> None:
        _check_model(model, tokenizer)
        check_type("reuse_cache", reuse_cache, bool)
        first = next(model.parameters(), None)
        if first is None:
            raise ValueError("model must have parameters (a causal language model), got a module without any")
        self.model, self.tokenizer, self.reuse_cache = model, tokenizer, reuse_cache
        self.device = first.device
        self.reset("")
        self.tokens_encoded = 0  # tokens run through the model, to compare the two paths

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.no_grad()
    def _forward(self, ids: list[int], cache=None) -> torch.Tensor:
        self.tokens_encoded += len(ids)
        x = torch.tensor([ids], device=self.device)
        kw = cache_kwargs(self.model, cache) if cache is not None else {}
        out = self.model(x, use_cache=cache is not None, **kw)
        return torch.log_softmax(out.logits[0].float(), dim=-1)  # [len(ids), vocab]

    def reset(self, text: str) -> None:
        """Start a new prompt with ``text``."""
        from transformers import DynamicCache

        check_type("text", text, str)
        self.ids: list[int] = []
        self.cache = DynamicCache(config=self.model.config) if self.reuse_cache else None
        self._last: torch.Tensor | None = None  # log-probs of the next token after the prompt
        if text:
            self.extend(text)

    def extend(self, text: str) -> None:
        """Append ``text`` to the prompt (with the cache: encode only these tokens)."""
        check_type("text", text, str)
        new = self._encode(text)
        if not new:
            return
        self.ids += new
        if self.reuse_cache:
            self._last = self._forward(new, self.cache)[-1]

    @torch.no_grad()
    def score(self, query: str, options: Sequence[str], *, space: bool = True) -> np.ndarray:
        """``[k]`` total log-probabilities ``log p(" " + option | prompt + query)`` (without the space when
        ``space=False``, e.g. at the start of a chat answer); the prompt is unchanged."""
        check_type("query", query, str)
        options = _check_words("options", options)
        check_type("space", space, bool)
        q = self._encode(query)
        opts = [self._encode((" " if space else "") + o) for o in options]
        for k, o in enumerate(opts):
            if not o:
                raise ValueError(f"options[{k}] {options[k]!r} encodes to no tokens; give a word to score")
        if not self.ids and not q:
            raise ValueError("score needs a non-empty prompt or query to condition on")
        out = np.empty(len(opts))
        if not self.reuse_cache:
            for k, o in enumerate(opts):
                ctx = self.ids + q
                lp = self._forward(ctx + o[:-1])
                out[k] = sum(float(lp[len(ctx) - 1 + i, tok]) for i, tok in enumerate(o))
            return out
        base = self.cache.get_seq_length()
        last = self._forward(q, self.cache)[-1] if q else self._last
        mid = self.cache.get_seq_length()
        for k, o in enumerate(opts):
            total = float(last[o[0]])
            if len(o) > 1:
                lp = self._forward(o[:-1], self.cache)
                total += sum(float(lp[i, tok]) for i, tok in enumerate(o[1:]))
                _crop_to(self.cache, mid)
            out[k] = total
        _crop_to(self.cache, base)
        return out


def _check_words(name: str, words) -> list[str]:
    """``words`` as a non-empty list of non-empty strings (a single string is not a list of words)."""
    words = check_sequence(name, words, "words")
    for k, w in enumerate(words):
        check_type(f"{name}[{k}]", w, str)
        if not w:
            raise ValueError(f"{name}[{k}] must be a non-empty word, got ''")
    return words


def _check_model(model, tokenizer) -> None:
    """A local causal LM and its tokenizer (``companion.lab.load_model``): a module, and a callable."""
    check_type("model", model, torch.nn.Module, what="a causal language model (a torch.nn.Module)")
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be a Hugging Face tokenizer (callable), got {describe(tokenizer)}")


class _PromptedAgent(Agent):
    """What the two LLM agents share: the prompt family, and for ``prompt="oracle"`` the partner whose next
    move is written into the question (its state is followed round by round)."""

    prompt: str

    def reset(self, game, *, horizon, rng, partner=None):
        super().reset(game, horizon=horizon, rng=rng, partner=partner)
        if self.prompt == "oracle":
            if partner is None:
                raise ValueError("the 'oracle' prompt tells the model its partner's next move, so reset needs partner=")
            self.partner, self._pstate = partner, partner.initial_state()

    def _partner_next(self, t: int) -> str:
        """The partner's most likely next move (oracle prompt)."""
        return self.game.partner_actions[int(np.argmax(self.partner.policy(self._pstate, t)))]

    def observe(self, a, b, r, t):
        if self.prompt == "oracle":
            self._pstate = self.partner.next_state(self._pstate, a, b, t)


class LLMAgent(_PromptedAgent):
    """A frozen language model playing by scoring action words (see the module docstring).

    Args:
        model, tokenizer: default :func:`companion.lab.load_model` (SmolLM2-135M-Instruct), loaded on first use.
        prompt: one of ``PROMPTS``.
        reuse_cache: reuse the growing prompt's KV cache between rounds (default) or re-encode it every time.
        temperature: 0 plays the highest-scoring action (ties: lowest index); > 0 samples with the agent's rng.
        order: the listing order of the action words in the rules (:func:`rules_text`); default the game's.
    """

    invalid = 0  # scoring always names a legal action

    def __init__(self, model=None, tokenizer=None, *, prompt: str = "lm", reuse_cache: bool = True,
                 temperature: float = 0.0, order=None) -> None:
        check_choice("prompt", prompt, PROMPTS)
        self.order = _check_order(order)
        temperature = check_float("temperature", temperature, low=0.0)
        if (model is None) != (tokenizer is None):
            raise TypeError("give both model and tokenizer, or neither (to load the book's model)")
        if model is not None:
            _check_model(model, tokenizer)
        check_type("reuse_cache", reuse_cache, bool)
        self.model, self.tokenizer = model, tokenizer
        self.prompt, self.reuse_cache, self.temperature = prompt, reuse_cache, float(temperature)
        self.name = f"llm-{prompt}"
        self.lm: ScoringLM | None = None

    def reset(self, game, *, horizon, rng, partner=None):
        super().reset(game, horizon=horizon, rng=rng, partner=partner)
        if self.model is None:
            from ..lab import load_model

            self.model, self.tokenizer = load_model()
        if self.lm is None or self.lm.reuse_cache != self.reuse_cache:
            self.lm = ScoringLM(self.model, self.tokenizer, reuse_cache=self.reuse_cache)
        rules = rules_text(self.game, payoffs=self.prompt != "no-payoffs", order=self.order)
        self.action_logprobs: list[np.ndarray] = []
        self.prediction_logprobs: list[np.ndarray] = []
        self.told: list[int] = []  # social / oracle: the partner move written into each action query
        if self.prompt == "chat":
            if not getattr(self.tokenizer, "chat_template", None):
                raise ValueError("prompt='chat' needs a tokenizer with a chat template (tokenizer.chat_template), "
                                 f"got {type(self.tokenizer).__name__} without one")
            ours = _order(self.game, self.order)
            self._listed = (", ".join(self.game.actions[a] for a in ours),
                            ", ".join(self.game.partner_actions[b] for b in _partner_order(self.game, ours)))
            self._messages = [{"role": "system", "content": rules.strip()}]
            self._rendered = self._render(self._messages, generation=False)
            self._last_b: int | None = None
            self.lm.reset(self._rendered)
        else:
            self.lm.reset(rules)

    def _render(self, messages: list[dict], *, generation: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    def _chat_suffix(self, messages: list[dict], *, generation: bool) -> str:
        """The text ``messages`` add after the conversation so far (the template must extend it as a prefix)."""
        text = self._render(self._messages + messages, generation=generation)
        if not text.startswith(self._rendered):
            raise ValueError("prompt='chat' needs a chat template that renders a conversation as a prefix of its "
                             "extension (ChatML does); this tokenizer's template rewrites earlier turns")
        return text[len(self._rendered):]

    def _chat_question(self, t: int, partner: bool) -> str:
        seen = (f"The partner played {self.game.partner_actions[self._last_b]}. "
                if self._last_b is not None else "")
        if partner:
            return (f"{seen}Round {t + 1}: which action will the partner play? Reply with one word: "
                    f"{self._listed[1]}.")
        return f"{seen}Round {t + 1}: which action do you play? Reply with one word: {self._listed[0]}."

    def _choose(self, lp: np.ndarray) -> int:
        if self.temperature == 0:
            return int(np.argmax(lp))
        z = lp / self.temperature
        p = np.exp(z - z.max())
        return int(self.rng.choice(len(p), p=p / p.sum()))

    def _partner_first(self) -> bool:
        return self.prompt in ("social", "oracle")

    def act(self, history, t):
        g, r = self.game, t + 1
        self._pred = None
        if self.prompt == "chat":
            self._q = self._chat_question(t, partner=False)
            lp = self.lm.score(self._chat_suffix([{"role": "user", "content": self._q}], generation=True), g.actions,
                               space=False)
            self.action_logprobs.append(lp)
            self._a = self._choose(lp)
            return self._a
        if self._partner_first():  # history lines read "Round k: the partner played b, you played a."
            self._pred = self.lm.score(f"Round {r}: the partner played", g.partner_actions)
            if self.prompt == "social":  # act on its own prediction
                told = g.partner_actions[int(np.argmax(self._pred))]
            else:  # oracle: the partner's actual (most likely) next move is written in
                told = self._partner_next(t)
            self.told.append(g.partner_actions.index(told))
            query = f"Round {r}: the partner played {told}, you played"
        else:  # history lines read "Round k: you played a, the partner played b."
            query = f"Round {r}: you played"
        lp = self.lm.score(query, g.actions)
        self.action_logprobs.append(lp)
        self._a = self._choose(lp)
        return self._a

    def predict(self, history, t):
        g = self.game
        if self._pred is None and self.prompt == "chat":
            q = self._chat_question(t, partner=True)
            self._pred = self.lm.score(self._chat_suffix([{"role": "user", "content": q}], generation=True),
                                       g.partner_actions, space=False)
        if self._pred is None:
            self._pred = self.lm.score(f"Round {t + 1}: you played {g.actions[self._a]}, the partner played",
                                       g.partner_actions)
        self.prediction_logprobs.append(self._pred)
        p = np.exp(self._pred - self._pred.max())
        return p / p.sum()

    def observe(self, a, b, r, t):
        super().observe(a, b, r, t)
        if self.prompt == "chat":
            turn = [{"role": "user", "content": self._q}, {"role": "assistant", "content": self.game.actions[a]}]
            self.lm.extend(self._chat_suffix(turn, generation=False))
            self._messages += turn
            self._rendered = self._render(self._messages, generation=False)
            self._last_b = b
        elif self.prompt != "no-history":
            g = self.game
            wa, wb = g.actions[a], g.partner_actions[b]
            self.lm.extend(f"Round {t + 1}: the partner played {wb}, you played {wa}.\n" if self._partner_first()
                           else f"Round {t + 1}: you played {wa}, the partner played {wb}.\n")


# --------------------------------------------------------------------------------------------- HTTP backend
#: words that end a clause for :func:`parse_action` (a negation or a subject does not reach past them)
_CLAUSE_END = r"[.;:!?\n]|,|\b(?:so|but|because|since|therefore|thus|hence|then|and|while|whereas)\b"
_NEGATION = re.compile(r"\b(?:not|never|no|won't|don't|doesn't|can't|cannot|shouldn't|wouldn't|avoid|against|"
                       r"instead\s+of|rather\s+than)\b|n't\b", re.IGNORECASE)
#: a word right after a past-tense verb is history ("the partner played rock"), not a choice
_PAST = re.compile(r"\b(?:played|chose|picked|selected|threw|took|went\s+with)\s*[\"'*`]*\s*$", re.IGNORECASE)
#: a stated choice: a verb of choosing (present or future, not "played") or "choice/move/answer is", right
#: before the word (at most a few filler words between)
_CHOICE = re.compile(r"(?:\b(?:play|plays|playing|choose|chooses|choosing|pick|picks|select|selects|throw|throws|"
                     r"take|takes|go\s+with|goes\s+with|go\s+for|goes\s+for|opt\s+for|opts\s+for|say|"
                     r"(?:choice|move|action|answer|pick|prediction|guess)\s+(?:is|will\s+be|=))\b)"
                     r"(?:\s+(?:the|a|an|with|for|to|again|probably|likely|definitely|certainly|"
                     r"action|move|option))*\s*[\"'*`]*\s*$", re.IGNORECASE)
_ME = re.compile(r"\b(?:i|i'll|i'd|i'm|i've|my|me|we|we'll|our)\b", re.IGNORECASE)
_THEM = re.compile(r"\b(?:partner|partner's|they|they'll|their|them|opponent|opponent's|he|she|it|it'll|"
                   r"he'll|she'll|other\s+player)\b", re.IGNORECASE)
_ANSWER = re.compile(r"\banswer\s*[:=\-]", re.IGNORECASE)


def parse_action(text: str, words: Sequence[str], *, who: str = "me") -> int | None:
    """The index of the action a free-text reply commits to, or None if it commits to none or is ambiguous.

    Read as a person would, in this order:

    1. **An explicit answer.** If the reply has "Answer: ..." (as :class:`HTTPAgent` asks for), only the text
       after the last such marker, up to the end of its sentence or line, counts, by the rules below.
    2. **The last stated choice.** A legal word right after a verb of choosing ("I play paper", "the partner
       will play rock", "my choice is scissors"; "played" is history, not a choice), unless its clause negates it
       ("I will not play rock", "I won't choose rock", "paper rather than rock"). If several are stated, the last
       one whose subject is ``who`` (``"me"``: I/my/we; ``"partner"``: the partner/they/opponent) wins, else the
       last one: "The partner will play rock, so I play paper." → paper (``who="me"``) or rock
       (``who="partner"``).
    3. **One word.** With no stated choice, the reply counts if every non-negated legal word in it is the same
       ("Paper.", "Rock, not scissors."); a word right after "played" (or "chose", "picked", ...) is history and
       does not count.

    Anything else — no legal word, or different words with nothing to choose between them ("rock or paper?") —
    is None: an invalid reply, never a guess. Words match whole and case-insensitively ("rocks" is not "rock").

    Args:
        text: the reply. words: the legal action words (a list, not one string). who: ``"me"`` or ``"partner"``.
    Raises:
        TypeError / ValueError: ``text`` not a str, ``words`` not a list of non-empty strings, ``who`` not one
        of the two.
    """
    check_type("text", text, str)
    words = _check_words("words", words)
    who = check_choice("who", who, ("me", "partner"))
    answers = list(_ANSWER.finditer(text))
    if answers:
        text = re.split(r"[\n.!?]", text[answers[-1].end():].lstrip(), maxsplit=1)[0]
    low = [w.lower() for w in words]
    pattern = re.compile(r"(?<![A-Za-z])(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
                         + r")(?![A-Za-z])", re.IGNORECASE)
    stated, plain = [], []  # (index, subject) of stated choices; indices of non-negated mentions
    for m in pattern.finditer(text):
        k = low.index(m.group(1).lower())
        before = text[:m.start()]
        clause = re.split(_CLAUSE_END, before, flags=re.IGNORECASE)[-1]
        if _NEGATION.search(clause) or _PAST.search(clause):
            continue
        plain.append(k)
        if _CHOICE.search(clause):
            me, them = list(_ME.finditer(clause)), list(_THEM.finditer(clause))
            last_me, last_them = (me[-1].start() if me else -1), (them[-1].start() if them else -1)
            subject = None if last_me == last_them else ("me" if last_me > last_them else "partner")
            stated.append((k, subject))
    if stated:
        mine = [k for k, subj in stated if subj == who]
        return mine[-1] if mine else stated[-1][0]
    return plain[0] if plain and len(set(plain)) == 1 else None


class HTTPBackend:
    """A client of an OpenAI-compatible ``POST {base_url}/chat/completions`` endpoint.

    The API key is read from the environment variable ``api_key_env`` at each request (never stored, printed or
    put in an error message); a missing variable sends no ``Authorization`` header (local servers). Each request
    gives up after ``timeout`` seconds with a ``ConnectionError`` naming the URL.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 30.0,
                 max_tokens: int = 16) -> None:
        check_type("base_url", base_url, str)
        if not re.match(r"^https?://[^\s/]", base_url):
            raise ValueError(f"base_url must start with http:// or https:// and a host, got {base_url!r}")
        check_type("model", model, str)
        if not model:
            raise ValueError("model must be a non-empty model name, got ''")
        check_type("api_key_env", api_key_env, str)
        if not api_key_env:
            raise ValueError("api_key_env must name an environment variable, got ''")
        timeout = check_float("timeout", timeout, low=0.0, low_open=True)
        max_tokens = check_int("max_tokens", max_tokens, low=1)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.timeout, self.max_tokens = model, api_key_env, timeout, max_tokens

    def __repr__(self) -> str:
        return f"HTTPBackend({self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def complete(self, prompt: str) -> str:
        """The reply text to one user message (temperature 0)."""
        check_type("prompt", prompt, str)
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "max_tokens": self.max_tokens, "temperature": 0}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read().decode())
        except urllib.error.HTTPError as err:
            raise ConnectionError(f"the endpoint {self.url} answered HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            raise ConnectionError(f"could not reach the OpenAI-compatible endpoint {self.url} within "
                                  f"{self.timeout:g} s: {reason}") from None
        except json.JSONDecodeError:
            raise ConnectionError(f"the endpoint {self.url} did not answer with JSON") from None
        try:
            return str(data["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise ConnectionError(f"the endpoint {self.url} answered without choices[0].message.content") from None


class HTTPAgent(_PromptedAgent):
    """The LLM agent for a remote model: same prompts as :class:`LLMAgent`, answered as text and parsed.

    Each round sends the rules, the history and a question that asks for a last line "Answer: <action>"; the
    action is the choice the reply commits to (:func:`parse_action`: the answer line first, else the last stated
    choice, negations read as such). A reply that commits to no legal action, or is ambiguous, counts in
    ``invalid`` and is replaced by a
    uniformly random action (from the agent's seeded rng); an unparsable prediction counts in
    ``invalid_predictions`` and becomes a uniform prediction. Two requests per round (prediction, action); with
    ``prompt="social"`` the prediction is written into the action question. ``order`` lists the action words in
    another order, in the rules and in the questions (:func:`rules_text`). ``prompt="chat"`` asks exactly as
    ``"lm"`` does: an endpoint's chat API already wraps every request in the model's chat template.
    """

    def __init__(self, backend: HTTPBackend, *, prompt: str = "lm", order=None) -> None:
        check_type("backend", backend, HTTPBackend, what="an HTTPBackend")
        check_choice("prompt", prompt, PROMPTS)
        self.order = _check_order(order)
        self.backend, self.prompt, self.name = backend, prompt, f"http-{prompt}"

    def reset(self, game, *, horizon, rng, partner=None):
        super().reset(game, horizon=horizon, rng=rng, partner=partner)
        self.text = rules_text(self.game, payoffs=self.prompt != "no-payoffs", order=self.order)
        ours = _order(self.game, self.order)
        self._listed = (", ".join(self.game.actions[a] for a in ours),
                        ", ".join(self.game.partner_actions[b] for b in _partner_order(self.game, ours)))
        self.invalid = self.invalid_predictions = 0
        self.replies: list[str] = []

    def _ask(self, question: str) -> str:
        reply = self.backend.complete(self.text + question)
        self.replies.append(reply)
        return reply

    def act(self, history, t):
        g, r = self.game, t + 1
        self._pred = None
        if self.prompt == "social":
            self._predict_now(t)
            told = g.partner_actions[int(np.argmax(self._pred))]
            extra = f"You expect the partner to play {told}. "
        elif self.prompt == "oracle":
            told = self._partner_next(t)
            extra = f"The partner will play {told} in this round. "
        else:
            extra = ""
        k = parse_action(self._ask(f"Round {r}. {extra}Which action do you play? End your reply with one line "
                                   f"'Answer: <action>', the action one of: {self._listed[0]}."), g.actions)
        if k is None:
            self.invalid += 1
            k = int(self.rng.integers(g.n_actions))
        return k

    def _predict_now(self, t):
        g = self.game
        k = parse_action(self._ask(f"Round {t + 1}. Which action will the partner play? End your reply with one "
                                   f"line 'Answer: <action>', the action one of: {self._listed[1]}."),
                         g.partner_actions, who="partner")
        if k is None:
            self.invalid_predictions += 1
            self._pred = np.full(g.n_partner_actions, 1.0 / g.n_partner_actions)
        else:
            self._pred = np.eye(g.n_partner_actions)[k]

    def predict(self, history, t):
        if self._pred is None:
            self._predict_now(t)
        return self._pred

    def observe(self, a, b, r, t):
        super().observe(a, b, r, t)
        if self.prompt != "no-history":
            g = self.game
            self.text += f"Round {t + 1}: you played {g.actions[a]}, the partner played {g.partner_actions[b]}.\n"
