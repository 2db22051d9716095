"""Full Track-25 setting for one seed: 55k train (val split seed 0, 5000), 10 epochs; val per epoch; test at the end."""
import sys, time, json, torch
from models.eqprop_mlp import EqPropConfig, EqPropMLP
from models.train import train, evaluate
from tracks.data import load_dataset, train_val_split
from tracks.shared.recipes import get_recipe
seed = int(sys.argv[1]); recipe = sys.argv[2]; extra = eval(sys.argv[3]) if len(sys.argv) > 3 else {}
ds = "fashion_mnist" if recipe.startswith("fmnist") else "mnist"
epochs = int(extra.pop("epochs", 10))
x, y = load_dataset(ds, "train")
x_tr, y_tr, x_val, y_val = train_val_split(x, y, n_val=5000, seed=0)
x_tr, y_tr, x_val, y_val = map(torch.from_numpy, (x_tr, y_tr, x_val, y_val))
cfg = get_recipe(recipe, epochs=epochs, seed=seed, **extra)
net = EqPropMLP(EqPropConfig(sizes=(784, 512, 10)), seed=seed)
t = time.time()
h = train(net, x_tr, y_tr, cfg, x_val=x_val, y_val=y_val, progress=False,
          epoch_callback=lambda e, h: print(f"seed {seed} epoch {e} val {h['val_acc'][-1]:.4f} {time.time()-t:.0f}s", flush=True))
xt, yt = load_dataset(ds, "test")  # final check only, after training
acc = evaluate(net, torch.from_numpy(xt), torch.from_numpy(yt), cfg.eval_steps or cfg.n_free_steps)
print(json.dumps({"seed": seed, "recipe": recipe, "changes": extra, "val_acc": h["val_acc"], "test_acc": acc,
                  "seconds": round(time.time() - t)}), flush=True)
