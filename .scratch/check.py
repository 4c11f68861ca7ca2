import torch, time
from pathlib import Path
from tests.text_helpers import *
from diversity_callbacks import TransformersSampler
tok = char_tokenizer(Path(".scratch/tok2"))
print(tok("the cat").input_ids, repr(tok.decode(tok("the cat").input_ids)))
m = tiny_gpt2()
s = TransformersSampler(m, tok, max_new_tokens=12)
g = lambda *seeds: [torch.Generator().manual_seed(x) for x in seeds]
a = s(PROMPTS, g(0,1,2)); print(a)
print(s(PROMPTS[1:2], g(1)), s(PROMPTS[::-1], g(2,1,0)))
gr = TransformersSampler(m, tok, max_new_tokens=12, do_sample=False)
print(gr(PROMPTS, g(0,1,2)))
enc = tok(PROMPTS, padding=True, padding_side="left", return_tensors="pt") if tok.pad_token else None
tok.pad_token = tok.eos_token
enc = tok(PROMPTS, padding=True, padding_side="left", return_tensors="pt")
out = m.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=tok.eos_token_id)
print(tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True))
st = TransformersSampler(m, tok, max_new_tokens=12, stop_strings=["a"], top_k=5, top_p=0.8)
print(st(PROMPTS, g(0,1,2)))
