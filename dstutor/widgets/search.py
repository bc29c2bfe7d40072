"""CaptionSearch: type a caption in English or Chinese and see the images a dual encoder finds closest."""
from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display
from transformers import PreTrainedTokenizerFast

from dstutor.multimodal.clip import DualEncoder, retrieve_images
from dstutor.multimodal.data import ImageSet
from dstutor.viz.multimodal import image_grid


class CaptionSearch:
    """A text box; on Enter the k most similar gallery images are drawn with their true captions and scores."""

    def __init__(self, model: DualEncoder, gallery: ImageSet, tokenizer: PreTrainedTokenizerFast, k: int = 6,
                 query: str = "", caption_template: int = 0):
        self.model, self.gallery, self.tokenizer, self.k = model, gallery, tokenizer, k
        self.template = caption_template
        self.box = W.Text(value=query, description="caption", continuous_update=False,
                          layout=W.Layout(width="60%"), placeholder="e.g. 左上角有一个大红色圆形")
        self.output = W.Output()
        self.box.observe(lambda change: self.search(), names="value")
        if query:
            self.search()

    def search(self) -> list[int]:
        """Retrieve for the current text and redraw; returns the gallery indices shown."""
        with self.output:
            self.output.clear_output(wait=True)
            try:
                indices, scores = retrieve_images(self.model, self.box.value, self.gallery.images, self.tokenizer, self.k)
            except ValueError as error:
                print(error)
                return []
            print(f"The {len(indices)} images closest to “{self.box.value}” (similarity: what each shows):")
            titles = [f"{s:.2f}: {self.gallery.caption(i, self.template)}" for i, s in zip(indices, scores)]
            image_grid(self.gallery.images[indices], titles, columns=self.k)  # English titles: fonts lack CJK
            plt.show()
        return indices

    def _ipython_display_(self) -> None:
        display(W.VBox([self.box, self.output]))
