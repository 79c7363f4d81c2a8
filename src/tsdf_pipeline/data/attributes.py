"""CelebA attribute names and the per-model label subsets."""

from __future__ import annotations

# The 40 attributes of ``list_attr_celeba.txt``, in the file's column order.
CELEBA_ATTRS: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)

# Label order of the official StarGAN / AttentionGAN CelebA checkpoints.
STARGAN_ATTRS: tuple[str, ...] = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")

# Label order of the official AttGAN ``256_shortcut1_inject0_none`` checkpoint.
ATTGAN_ATTRS: tuple[str, ...] = (
    "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bushy_Eyebrows", "Eyeglasses", "Male",
    "Mouth_Slightly_Open", "Mustache", "No_Beard", "Pale_Skin", "Young",
)


def attr_indices(names: list[str] | tuple[str, ...]) -> list[int]:
    """Column indices of ``names`` in :data:`CELEBA_ATTRS`; raises ``KeyError`` naming an unknown attribute."""
    index = {name: i for i, name in enumerate(CELEBA_ATTRS)}
    missing = [n for n in names if n not in index]
    if missing:
        raise KeyError(f"unknown CelebA attribute(s) {missing}; expected names from list_attr_celeba.txt")
    return [index[n] for n in names]
