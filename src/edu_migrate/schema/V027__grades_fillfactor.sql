-- Room on each page of grades for new versions of its marks: a tenth of each page is left free
-- when the marks are loaded. A mark whose score changes (a teacher's correction on edu_v2, a
-- sync of a corrected mark on edu) is then written again on its own page, as a HOT update: no
-- new entry in any of the five indexes of grades and no foreign-key check, where a full page
-- sends the new version elsewhere, with an entry in every index. docs/benchmarks.md measures it
-- ("Marks updated in place"). Pages already written keep their fill until they are rewritten
-- (the next load of phase 5).
ALTER TABLE grades SET (fillfactor = 90);
