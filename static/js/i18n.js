// Every string the page shows comes from the catalog the server renders into the page
// (jscatalog.py), in the user's language; dates, plurals and lists follow its locale.

const catalog = readCatalog();

export const locale = catalog.locale;

export const formats = {
  time: new Intl.DateTimeFormat(catalog.locale, { hour: "2-digit", minute: "2-digit" }),
  dateTime: new Intl.DateTimeFormat(catalog.locale, { dateStyle: "medium", timeStyle: "short" }),
  full: new Intl.DateTimeFormat(catalog.locale, { dateStyle: "full", timeStyle: "medium" }),
  plural: new Intl.PluralRules(catalog.locale),
  list: new Intl.ListFormat(catalog.locale, { type: "conjunction" }),
};

// The catalog is data in the page; a page rendered without it still works, showing keys.
function readCatalog() {
  let data = {};
  try {
    data = JSON.parse(document.getElementById("chat-i18n")?.textContent ?? "{}") ?? {};
  } catch {
    console.warn("the page's string catalog is not JSON");
  }
  return { locale: validLocale(data.locale), strings: data.strings ?? {} };
}

// Intl throws on a malformed tag: one bad tag must not stop the page.
function validLocale(tag) {
  try {
    return Intl.getCanonicalLocales(tag ?? [])[0] ?? "en";
  } catch {
    return "en";
  }
}

// A missing string shows its key, so it is seen (and fixed) rather than crashing the page.
export function t(key, params = {}) {
  const text = catalog.strings[key] ?? key;
  const fill = (whole, name) => (Object.hasOwn(params, name) ? `${params[name]}` : whole);
  return text.replace(/\{(\w+)\}/g, fill); // A function: "$&" in a message is not a pattern.
}

// Plural forms are keys "<base>_<category>"; a language without a category falls back to "other".
export function tCount(base, count, params = {}) {
  const key = `${base}_${formats.plural.select(count)}`;
  return t(key in catalog.strings ? key : `${base}_other`, { count, ...params });
}
