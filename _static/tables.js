// Column names printed by notebook cells are often snake_case ("signed_recovery", "mean_u_a"),
// which gives a browser no place to break a header, so a table of short numbers can be pushed past
// the text column by its headers alone. Offer a break after each underscore (<wbr>): the header
// wraps at a word boundary of its own name, never inside a word. Text nodes only; markup is kept.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".cell_output table th").forEach((th) => {
    const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
    const nodes = [];
    while (walker.nextNode()) nodes.push(walker.currentNode);
    nodes.filter((n) => n.nodeValue.includes("_")).forEach((n) => {
      const parts = n.nodeValue.split("_");
      const frag = document.createDocumentFragment();
      parts.forEach((part, i) => {
        frag.append(part + (i < parts.length - 1 ? "_" : ""));
        if (i < parts.length - 1) frag.append(document.createElement("wbr"));
      });
      n.replaceWith(frag);
    });
  });
});
