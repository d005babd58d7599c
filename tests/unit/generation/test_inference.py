"""What every decoding command runs on: the decode-layout copy of a trained model (checked against the
model it was made from), and models with more vocabulary rows than their tokenizer has tokens (GPT-2's
padded 50,304, a converted checkpoint): generation, chat and translation never produce such an id."""

import pytest
import torch

from qkv.data.chat_template import add_chat_tokens, render
from qkv.generation.chat import ChatSession, stream_reply
from qkv.generation.inference import TransposedLinear, for_decoding, prepare_for_decoding
from qkv.generation.lm import generate_ids, generate_text
from qkv.generation.sampling import TokenSampling
from qkv.generation.seq2seq import SequenceDecoding, translate_lines
from qkv.models import GPT, GPTConfig
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig
from qkv.tokenizers import train_bpe, train_char


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tie", [True, False])
def test_decoding_copy_computes_the_trained_model(bias, tie):
    """`for_decoding` (the copy `qkv generate` and `qkv chat` decode with) equals the model it was made
    from, with biases (converted GPT-2 weights) and without, tied head or not; the model is untouched."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=40, max_seq_len=16, d_model=32, n_layers=2, n_heads=4, bias=bias,
                      tie_embeddings=tie)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.2)  # non-zero biases too, or the bias branch would add zeros
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fast = for_decoding(m)
    assert sum(isinstance(x, TransposedLinear) for x in fast.modules()) == 2 * 6 + 1  # q k v o up down per layer; head
    assert all(isinstance(x, torch.nn.Linear) for x in (m.lm_head, m.blocks[0].attn.q_proj))
    assert not any(p.requires_grad for p in fast.parameters())
    x = torch.randint(0, 40, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(fast(x)[0], m(x)[0], atol=1e-5, rtol=1e-5)
        cache = fast.new_cache(2)
        steps = torch.cat([fast(x[:, i : i + 1], cache=cache)[0] for i in range(16)], dim=1)  # (2, 16, V)
        torch.testing.assert_close(steps, m(x)[0], atol=1e-5, rtol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert (m.lm_head.weight is m.tok_emb.weight) == tie


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_prepare_for_decoding_picks_the_layout():
    m = GPT(GPTConfig(vocab_size=20, max_seq_len=8, d_model=16, n_layers=1, n_heads=2)).eval()
    assert isinstance(prepare_for_decoding(m).lm_head, TransposedLinear)
    assert not isinstance(prepare_for_decoding(m, "int8").lm_head, (TransposedLinear, torch.nn.Linear))


# ---------------------------------------------------------------------------------------------------------
# models with more rows than the tokenizer has tokens


def favour_extra_rows(model, norm, n_real: int) -> None:
    """Make the ids ≥ n_real the likeliest next tokens everywhere: the final norm's bias shifts every hidden
    state towards the all-ones direction, and the (untied) head's extra rows point there."""
    with torch.no_grad():
        norm.bias.fill_(1.0)
        model.lm_head.weight[n_real:] = 1.0


def test_generation_never_emits_an_id_the_tokenizer_lacks():
    tok = train_char("abcdefgh")  # 8 ids; the model has 12 rows
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, max_seq_len=16, d_model=16, n_layers=1, n_heads=2,
                          tie_embeddings=False)).eval()
    favour_extra_rows(model, model.norm_f, tok.vocab_size)
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode("abc")]))[0][0, -1]
    assert int(logits.argmax()) >= tok.vocab_size  # unmasked, greedy would pick an extra row
    for sampling in (TokenSampling(temperature=0.0), TokenSampling(temperature=1.0)):
        ids = list(generate_ids(model, tok.encode("abc"), 30, sampling, vocab_size=tok.vocab_size,
                                generator=torch.Generator().manual_seed(0)))
        assert all(i < tok.vocab_size for i in ids)
        out = generate_text(model, tok, "abc", 30, sampling, seed=0)  # decoding an extra id raised before
        assert len(out) == 30 and set(out) <= set("abcdefgh")


def test_chat_never_emits_an_id_the_tokenizer_lacks():
    tok = train_char("abcdefgh ?")
    add_chat_tokens(tok)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size + 5, max_seq_len=64, d_model=16, n_layers=1, n_heads=2,
                          tie_embeddings=False)).eval()
    favour_extra_rows(model, model.norm_f, tok.vocab_size)
    with torch.no_grad():
        model.lm_head.weight[tok.encode("b")[0]] = 0.5  # the best real token, after the extra rows
    ids, _ = render([{"role": "user", "content": "abc?"}], tok, add_generation_prompt=True)
    reply = "".join(stream_reply(model, tok, ids, 20, TokenSampling(temperature=0.0)))
    assert reply == "b" * 20
    session = ChatSession(model, tok, TokenSampling(temperature=1.0), 20, seed=3)
    assert set("".join(session.reply("abc?"))) <= set("abcdefgh ?")


@pytest.mark.parametrize("beam", [1, 3])
def test_translation_never_emits_an_id_the_target_tokenizer_lacks(beam):
    tok = train_bpe(["ein mann", "a man", "zwei hunde", "two dogs"] * 5, vocab_size=270)
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(vocab_size=tok.vocab_size + 6, max_seq_len=16, d_model=16, n_encoder_layers=1,
                                  n_decoder_layers=1, n_heads=2, dropout=0.0, tie_embeddings=False,
                                  pad_id=tok.pad_id)).eval()
    favour_extra_rows(model, model.dec_norm, tok.vocab_size)
    out, _ = translate_lines(model, tok, tok, ["ein mann", "zwei hunde"], SequenceDecoding(beam=beam, max_len_b=5))
    assert len(out) == 2 and all(o for o in out)  # decoding an extra id raised before
