import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'data/', 'coverage/', 'test/generated/', '**/*.js', '**/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // The equivalent of verbatimModuleSyntax for a CommonJS build: type-only imports are marked and erased.
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-import-type-side-effects': 'error',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/no-confusing-void-expression': ['error', { ignoreArrowShorthand: true }],
      // better-sqlite3 12 objects must never be collected under Node 24: see src/store/sqlite/database.ts.
      'no-restricted-imports': [
        'error',
        {
          paths: [
            {
              name: 'better-sqlite3',
              allowTypeImports: true,
              message: 'Open SQLite with SqliteDatabase (src/store/sqlite/database.ts), which keeps its objects.',
            },
          ],
        },
      ],
      'no-restricted-properties': [
        'error',
        { property: 'iterate', message: 'Use rowsOf (src/store/sqlite/database.ts), which keeps the iterator.' },
      ],
    },
  },
  {
    // The baselines measure raw better-sqlite3, each in a process of its own.
    files: ['bench/baselines/**'],
    rules: { 'no-restricted-imports': 'off', 'no-restricted-properties': 'off' },
  },
);
