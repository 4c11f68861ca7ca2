import json, torch, time
from pathlib import Path
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer
d = Path(".scratch/tok"); d.mkdir(exist_ok=True)
chars = list("abcdefghijklmnopqrstuvwxyz .,!?")
vocab = {c: i for i, c in enumerate(chars)}; vocab["<|endoftext|>"] = len(vocab)
(d/"vocab.json").write_text(json.dumps(vocab)); (d/"merges.txt").write_text("#version: 0.2\n")
tok = GPT2Tokenizer(str(d/"vocab.json"), str(d/"merges.txt"))
print(tok("hello world").input_ids, tok.eos_token_id, tok.pad_token_id)
torch.manual_seed(0)
m = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=len(vocab)-1, eos_token_id=len(vocab)-1)).eval()
print(type(m.generation_config), m.generation_config.eos_token_id, m.generation_config.pad_token_id)
ids = [tok(p).input_ids for p in ["hi", "hello there"]]
L = max(map(len, ids)); pad = tok.eos_token_id
inp = torch.tensor([[pad]*(L-len(x))+x for x in ids]); mask = torch.tensor([[0]*(L-len(x))+[1]*len(x) for x in ids])
pos = (mask.cumsum(1)-1).clamp(min=0)
with torch.no_grad():
  out = m(input_ids=inp, attention_mask=mask, position_ids=pos, use_cache=True)
  print(type(out.past_key_values))
  g = m.generate(input_ids=inp, attention_mask=mask, do_sample=False, max_new_tokens=10, pad_token_id=pad)
  print(g[:, L:])
  # my greedy
  past = out.past_key_values; logits = out.logits[:, -1]; toks=[]
  for t in range(10):
    nxt = logits.argmax(-1); toks.append(nxt)
    mask = torch.cat([mask, torch.ones(2,1,dtype=mask.dtype)],1); pos = pos[:, -1:]+1
    out = m(input_ids=nxt[:,None], attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
    past = out.past_key_values; logits = out.logits[:, -1]
  print(torch.stack(toks,1))
p = torch.softmax(torch.randn(31),0)
g1 = torch.Generator().manual_seed(3); g2 = torch.Generator().manual_seed(3)
a = [int(torch.multinomial(p,1,generator=g1)) for _ in range(20)]
b = [int((p/torch.empty_like(p).exponential_(generator=g2)).argmax()) for _ in range(20)]
print(a==b, a[:5], b[:5])
